"""Building blocks: the dilation arithmetic, causal and dilated convolutions, the context module, output heads."""
