"""The corpus: a team's repositories turned into packed token sequences, with a
manifest saying exactly what went in (see build.py for the pipeline)."""
