"""sgpfab: deploy Python web APIs to fleets of Linux (and Windows) hosts with Fabric."""

__version__ = "0.1.0"
