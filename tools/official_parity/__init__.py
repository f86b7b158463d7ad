"""Hand-run parity tools against the reference SpeechCLIP code (never imported by the package or tests)."""
