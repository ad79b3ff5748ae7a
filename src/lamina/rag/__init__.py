"""Retrieval-augmented generation: documents in, chunks with their provenance and access groups,
embeddings, a vector store with access control inside the query, hybrid retrieval, grounded answers."""
