"""Freight's services and their common library, installed with `pip install 'freight[server]'`.

`freight_server.shared` is the library every service uses (events, the fold, the bus, the stream
consumer, databases, settings); `freight_server.services.{api,scheduler,runner,filestore}` are
the services. The client (`freight`: the SDK and CLI) needs none of it.
"""
