pytest_plugins = ["stream_router.sandbox.pytest_plugin"]
