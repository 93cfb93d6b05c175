"""`kdforge run --budget`: find the most accurate distilled student whose shipped file meets a latency
budget on a named target."""
