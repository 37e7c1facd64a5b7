"""Items and interactions records, the leave-one-out split, and converters into the mscg format."""
