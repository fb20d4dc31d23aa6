"""How a document longer than the model's positions is read: the strategy table, position remaps,
rotary scaling, attention scales and SelfExtend."""
