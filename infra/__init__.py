"""Local-only pieces of citeq: the assistant emulator and the local AWS stack. Never shipped to Lambda."""
