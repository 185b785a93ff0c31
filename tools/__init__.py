"""Command-line chores that run in the app environment."""
