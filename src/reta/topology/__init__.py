"""Topology for PTA: mutual k-NN graphs, persistence diagrams with critical edges, persistence images
and the differentiable topology loss. Pure torch/numpy/scipy/gudhi — no Lightning, no images
(docs/methods.md §4.2, §4.4; docs/architecture.md "Contracts")."""

from reta.topology.diagrams import (
    CloudPairing,
    PaddedBars,
    UnionPairing,
    edge_lengths,
    pairing_bars,
    persistence_pairings,
    resolve_cutoff,
    union_bars,
)
from reta.topology.graph import (
    UnionGraph,
    effective_k,
    mutual_knn_graphs,
    mutual_knn_graphs_from_sq_distances,
    pairwise_sq_distances,
)
from reta.topology.images import persistence_images
from reta.topology.loss import (
    RealTarget,
    TopologyConfig,
    TopologyLoss,
    build_real_targets,
    per_class_topology_loss,
    topology_loss,
)

__all__ = [
    "CloudPairing",
    "PaddedBars",
    "RealTarget",
    "TopologyConfig",
    "TopologyLoss",
    "UnionGraph",
    "UnionPairing",
    "build_real_targets",
    "edge_lengths",
    "effective_k",
    "mutual_knn_graphs",
    "mutual_knn_graphs_from_sq_distances",
    "pairing_bars",
    "pairwise_sq_distances",
    "per_class_topology_loss",
    "persistence_images",
    "persistence_pairings",
    "resolve_cutoff",
    "topology_loss",
    "union_bars",
]
