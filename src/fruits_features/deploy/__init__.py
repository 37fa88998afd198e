"""Running the job on AWS: the package a cluster needs and the EMR step that runs it.

- :mod:`~fruits_features.deploy.package` builds ``dist/`` (``make package``): the wheel, a
  ``--py-files`` archive, the entry point, the configs, the bootstrap script and the cluster nodes'
  pinned requirements, one set per ``model.engine`` (``onnxruntime`` without TensorFlow, ``tensorflow``).
- :mod:`~fruits_features.deploy.settings` reads ``conf/emr-cluster.yaml``: where and on what the
  step runs (the job's own settings stay in ``conf/emr.yaml``).
- :mod:`~fruits_features.deploy.plan` turns both into the exact EMR API requests.
- :mod:`~fruits_features.deploy.emr` is the ``submit`` command: upload, create a cluster or add a
  step to one, wait, report.
"""
