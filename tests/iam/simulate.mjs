// Evaluate IAM requests against identity policies with @cloud-copilot/iam-simulate.
// stdin: {"principal": ARN, "account": ID, "policies": {name: document},
//         "requests": [{action, resource, context, resourcePolicy (optional: a KMS key's policy)}]}
// stdout: one result per request: {"result": "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied" | "Error",
//          "allowedBy": ["<policy>#<Sid>", ...], "errors": ...}
import { runSimulation } from '@cloud-copilot/iam-simulate'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'))
const identityPolicies = Object.entries(input.policies).map(([name, policy]) => ({ name, policy }))

const results = []
for (const request of input.requests) {
  const response = await runSimulation(
    {
      identityPolicies,
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      resourcePolicy: request.resourcePolicy,
      request: {
        action: request.action,
        principal: input.principal,
        resource: { accountId: input.account, resource: request.resource },
        contextVariables: request.context ?? {}
      }
    },
    {}
  )
  if (response.resultType === 'error' || !response.result) {
    results.push({ result: 'Error', allowedBy: [], errors: response.errors ?? response })
    continue
  }
  const analysis = response.result.analysis
  const allows = analysis.identityAnalysis?.allowStatements ?? []
  results.push({
    result: analysis.result,
    allowedBy: allows.map((a) => `${a.policyId}#${a.explain.identifier}`)
  })
}
process.stdout.write(JSON.stringify(results))
