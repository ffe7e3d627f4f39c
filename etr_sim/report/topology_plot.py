"""Draw a topology graph (matplotlib only here, in report/). Large clusters are drawn as their first nodes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

_COLORS = {"scale_up": "tab:green", "pcie": "tab:orange", "pcie_p2p": "tab:olive", "nic": "tab:blue",
           "fabric": "tab:purple", "fabric_core": "tab:red"}


def draw_topology(topo, path: Path, max_gpus: int = 64) -> None:
    """PNG of the graph restricted to the first ``max_gpus`` GPUs and everything on their paths."""
    keep_gpus = set(topo.gpu_nodes[:max_gpus])
    g = topo.graph
    nodes = {n for n in g.nodes if not n.startswith("gpu") or n.split(".")[0] in keep_gpus}
    nodes = {n for n in nodes if not (n.startswith("nic") and int(n[3:].split(".")[0]) >= max_gpus)}
    sub = g.subgraph(nodes).to_undirected()
    sub = sub.subgraph(max(nx.connected_components(sub), key=len))
    pos = nx.kamada_kawai_layout(sub) if len(sub) <= 300 else nx.spring_layout(sub, seed=0)
    fig, ax = plt.subplots(figsize=(10, 8))
    for cls, color in _COLORS.items():
        edges = [(u, v) for u, v, d in sub.edges(data=True) if d.get("cls") == cls]
        if edges:
            nx.draw_networkx_edges(sub, pos, edgelist=edges, edge_color=color, ax=ax, label=cls, width=1.2)
    kinds = ["tab:gray" if n.startswith("gpu") else "black" for n in sub.nodes]
    nx.draw_networkx_nodes(sub, pos, node_size=25, node_color=kinds, ax=ax)
    ax.legend(fontsize=8)
    ax.set_title(f"{topo.name}: {topo.num_gpus} GPUs (first {min(max_gpus, topo.num_gpus)} drawn)")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
