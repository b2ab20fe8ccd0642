import torch

# The test models are tiny: one thread avoids oversubscribing the 2 CI cores when pytest and torch both spawn work.
torch.set_num_threads(1)
