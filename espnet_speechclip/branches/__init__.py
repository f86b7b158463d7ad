"""The two SpeechCLIP branches: parallel (utterance embedding) and cascaded (keywords via CLIP text)."""
