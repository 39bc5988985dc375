"""The pipeline's step graph, and a picture of it as inline SVG.

The picture is drawn here rather than by a graph tool so that a report stays one
self-contained file: layers are the graph's topological generations, left to right, and a
node's place within its layer follows the mean place of its parents (one barycentre pass),
which keeps the small DAGs of ML pipelines free of most crossings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

import networkx as nx

from engine.refs import RefError, parse_ref
from engine.spec import Pipeline

INPUTS, OUTPUTS = "inputs", "outputs"
CHAR_W, LINE_H, PAD, GAP_X, GAP_Y = 7.0, 16, 10, 70, 24
TOP = 24  # above the nodes: the channel of edges that skip a layer
CHANNEL = 12
FILL = {"suspect": "#fde0dd", "candidate": "#fff1db", "step": "#eef3fb", "port": "#f2f2f2"}
STROKE = {"suspect": "#c62828", "candidate": "#ef8f00", "step": "#4a6fa5", "port": "#888888"}


def step_graph(pipeline: Pipeline) -> nx.DiGraph:
    """Steps plus the pipeline's ``inputs`` and ``outputs`` as nodes; an edge per step that
    reads (``kind="input"``) or is triggered by (``kind="trigger"``) another node."""
    graph = nx.DiGraph()
    graph.add_node(INPUTS, kind="port")
    for step in pipeline.steps:
        graph.add_node(step.name, kind="step")
    for step in pipeline.steps:
        refs = [(r, "input") for r in step.inputs or [pipeline.name]]
        refs += [(r, "trigger") for r in step.triggers]
        for text, kind in refs:
            try:
                ref = parse_ref(text, pipeline)
            except RefError:
                continue  # validation reports it; the picture shows what does parse
            source = ref.step if ref.step and ref.port == "outputs" else INPUTS
            if not graph.has_edge(source, step.name):  # inputs come first and win
                graph.add_edge(source, step.name, kind=kind)
    sinks = (pipeline.output.steps if pipeline.output and pipeline.output.steps else
             [n for n in graph if graph.out_degree(n) == 0 and n != INPUTS])
    graph.add_node(OUTPUTS, kind="port")
    for text in sinks:
        try:
            ref = parse_ref(text, pipeline)
        except RefError:
            continue
        if ref.step:
            graph.add_edge(ref.step, OUTPUTS, kind="input")
    return graph


def _layers(graph: nx.DiGraph) -> list[list[str]]:
    """Topological generations; a cyclic graph is layered by its condensation."""
    if nx.is_directed_acyclic_graph(graph):
        layers = [list(g) for g in nx.topological_generations(graph)]
    else:
        dag = nx.condensation(graph)
        layers = [[n for c in gen for n in sorted(dag.nodes[c]["members"])]
                  for gen in nx.topological_generations(dag)]
    order = {n: i for i, n in enumerate(graph)}
    place: dict[str, float] = {}
    for layer in layers:
        def key(node: str) -> tuple[float, int]:
            parents = [place[p] for p in graph.predecessors(node) if p in place]
            return (sum(parents) / len(parents) if parents else order[node], order[node])
        layer.sort(key=key)
        for i, node in enumerate(layer):
            place[node] = i
    return layers


def dag_svg(graph: nx.DiGraph, *, notes: Mapping[str, Sequence[str]] | None = None,
            ranks: Mapping[str, int] | None = None) -> str:
    """An ``<svg>`` element (no XML namespace needed inline in HTML) of ``graph``.

    ``notes`` adds lines of text under a node's name; ``ranks`` marks suspected steps by
    their rank, 1 being the prime suspect (red), the others amber.
    """
    notes, ranks = notes or {}, ranks or {}
    label = {n: (f"#{ranks[n]} {n}" if n in ranks else n) for n in graph}
    lines = {n: [label[n], *notes.get(n, ())] for n in graph}
    size = {n: (max(len(t) for t in lines[n]) * CHAR_W + 2 * PAD, len(lines[n]) * LINE_H + PAD)
            for n in graph}
    layers = _layers(graph)
    widths = [max(size[n][0] for n in layer) for layer in layers]
    heights = [sum(size[n][1] for n in layer) + GAP_Y * (len(layer) - 1) for layer in layers]
    layer_of = {n: i for i, layer in enumerate(layers) for n in layer}
    total_h = max(heights) + 2 * PAD + TOP
    pos: dict[str, tuple[float, float]] = {}
    x = PAD
    for layer, width, height in zip(layers, widths, heights, strict=True):
        y = TOP + (total_h - TOP - height) / 2
        for node in layer:
            pos[node] = (x + (width - size[node][0]) / 2, y)
            y += size[node][1] + GAP_Y
        x += width + GAP_X
    total_w = x - GAP_X + PAD

    def role(node: str) -> str:
        if node in ranks:
            return "suspect" if ranks[node] == 1 else "candidate"
        return graph.nodes[node].get("kind", "step")

    parts = [f'<svg class="dag" viewBox="0 0 {total_w:.0f} {total_h:.0f}" width="{total_w:.0f}" '
             f'height="{total_h:.0f}" style="max-width:100%;height:auto" role="img" '
             'font-family="sans-serif" font-size="12">',
             '<defs><marker id="dag-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#666"/>'
             '</marker></defs>']
    for a, b, data in graph.edges(data=True):
        (ax, ay), (bx, by) = pos[a], pos[b]
        x1, y1 = ax + size[a][0], ay + size[a][1] / 2
        x2, y2 = bx, by + size[b][1] / 2
        if layer_of[b] - layer_of[a] != 1:  # skips layers (or loops back): over the top
            r = GAP_X / 2
            d = (f"M{x1:.1f},{y1:.1f} C{x1 + r:.1f},{y1:.1f} {x1 + r:.1f},{CHANNEL:.1f} "
                 f"{x1 + 2 * r:.1f},{CHANNEL:.1f} L{x2 - 2 * r:.1f},{CHANNEL:.1f} "
                 f"C{x2 - r:.1f},{CHANNEL:.1f} {x2 - r:.1f},{y2:.1f} {x2:.1f},{y2:.1f}")
        else:
            mid = (x1 + x2) / 2
            d = f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
        dash = ' stroke-dasharray="5,4"' if data.get("kind") == "trigger" else ""
        parts.append(f'<path d="{d}" fill="none" stroke="#666" stroke-width="1.3"{dash} '
                     f'marker-end="url(#dag-arrow)"><title>{escape(a)} → {escape(b)} '
                     f'({escape(data.get("kind", "input"))})</title></path>')
    for node in graph:
        (nx_, ny), (w, h), kind = pos[node], size[node], role(node)
        bold = kind == "suspect"
        parts.append(f'<g class="node {kind}" data-node="{escape(node)}"><title>{escape(node)}</title>'
                     f'<rect x="{nx_:.1f}" y="{ny:.1f}" width="{w:.1f}" height="{h:.1f}" rx="6" '
                     f'fill="{FILL[kind]}" stroke="{STROKE[kind]}" stroke-width="{2.5 if bold else 1.2}"/>')
        for i, text in enumerate(lines[node]):
            weight = ' font-weight="bold"' if i == 0 else ' fill="#444"'
            parts.append(f'<text x="{nx_ + PAD:.1f}" y="{ny + PAD / 2 + (i + 0.8) * LINE_H:.1f}"'
                         f'{weight}>{escape(text)}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
