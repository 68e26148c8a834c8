"""`tuneloop serve`: the HTTP API and the page over the same runs dir as the CLI."""
