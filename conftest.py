# Shared fixtures for every test in the repository (nats-server, databases, tokens).
pytest_plugins = ["listboss_common.testing"]
