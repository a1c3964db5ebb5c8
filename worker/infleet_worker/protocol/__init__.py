"""Wire protocol: KServe v2 / Triton datatypes, tensor codecs and error kinds."""
