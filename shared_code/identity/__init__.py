"""Who the caller is and what of theirs exists: tokens, API keys, rate limits, account export and erasure."""
