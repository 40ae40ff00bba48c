"""The training step captured once as a CUDA graph, checked against the eager step, and replayed
(compute.cuda_graph).
"""
