"""The demo file: its layout (schema), its one writer (recorder) and its one reader (dataset)."""
