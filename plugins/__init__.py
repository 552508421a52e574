"""Built-in domain plugins, registered through the edge_agent.plugins entry points."""
