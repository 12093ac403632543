"""Carbon-intensity data sources behind one interface: each returns a ForecastSeries."""
