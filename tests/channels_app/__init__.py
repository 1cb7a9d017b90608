"""A Channels project on django_pgpubsub's layer, served by uvicorn in the layer's process tests."""
