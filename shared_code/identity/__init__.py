"""Identity: who calls (JWT modes, API keys), how often (rate limits), and a user's data as a whole (export, erase)."""
