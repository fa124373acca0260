"""Programs as a user of raydspy writes them, in a package of their own (not raydspy's)."""
