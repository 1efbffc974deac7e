"""Speech -> take: the options of a generation (`options`), the window loop of this project's models
(`loop`, with the speech feature stream in `features`), the token choice per window (`decoding`), the
converted official release's adapter (`official`) and what is done to a take after the model (`post`).
The public entry point is `core.generation.inference.generate`."""
