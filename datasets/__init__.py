"""Loaders for the public dataset layouts, and the built-in demo data."""
