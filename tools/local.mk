# diskserve-img
