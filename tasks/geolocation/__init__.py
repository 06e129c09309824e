"""Photo geolocation (PlaNet, Table 11): ``python -m tasks.geolocation partition|fit|validate|test|predict``."""
