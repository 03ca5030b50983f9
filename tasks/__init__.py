"""gangway: provision, deploy and roll back Django apps on Debian servers with Fabric."""
