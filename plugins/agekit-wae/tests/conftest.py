import torch

# The machines these run on share two cores between engineers; intra-op threads only add
# start-up cost on the small batches the tests use.
torch.set_num_threads(1)
