# Shared fixtures for every test in the repository (libs/listboss_testing: nats-server, databases, gRPC servers).
pytest_plugins = ["listboss_testing.fixtures"]
