"""What the ListBoss services share: configuration, logging, the gRPC server
bootstrap, authentication, errors, the bus, the database, paging and filters."""
