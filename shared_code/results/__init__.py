"""Results: the classification use cases (HTTP and blob flows), their Cosmos and Blob stores, gallery, export."""
