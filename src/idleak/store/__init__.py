"""The embedding store (vectors memory-mapped, metadata per segment, an on-disk key index, named
datasets) and the read path from records to face sets."""

from idleak.store.core import (
    FORMAT_VERSION,
    Dataset,
    EmbeddingStore,
    FaceRows,
    StoreWriter,
    meta_schema,
)

__all__ = ["FORMAT_VERSION", "Dataset", "EmbeddingStore", "FaceRows", "StoreWriter", "meta_schema"]
