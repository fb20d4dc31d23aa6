"""What a run asks for, as typed schemas that load nothing: variants, encoding options, sweeps,
the [train] section."""
