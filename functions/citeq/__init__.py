"""citeq: cited answers at scale from a Pinecone Assistant."""

__version__ = "0.1.0"
