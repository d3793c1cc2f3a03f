"""Select: from what was observed to selection masks (parameter coordinates with provenance)."""

# The mask rules by name, in their default priority order. Names only, here, so that reading
# them (the CLI's --help) imports no torch; `mask_rules` implements them.
RULES = ("super_weights", "norm_outliers", "attention_reads", "ffn_reads")
