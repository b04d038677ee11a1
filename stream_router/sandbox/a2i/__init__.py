"""An emulator of the Amazon A2I runtime API (``sagemaker-a2i-runtime``) for the sandbox.

- ``api``: the five operations and their validation, without HTTP;
- ``control``: DescribeFlowDefinition, the one operation of SageMaker's control plane served
  (the router's start-up check of its flow definitions);
- ``server``: the HTTP app, fault injection, the loop scheduler and the S3/EventBridge effects;
- ``reviewers``: simulated workers (who answers what, and when);
- ``store``: SQLite persistence, so loops survive a restart;
- ``launcher``: :class:`A2IEmulator`, the emulator as a managed child process.
"""
