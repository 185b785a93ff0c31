"""Local Azure stack for development and tests: emulators, a local Functions host, and the `stack` command."""
