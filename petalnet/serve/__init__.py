"""``petalnet serve``: a local web page and JSON API that name the flower in a photo."""
