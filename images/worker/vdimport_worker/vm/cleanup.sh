# Remove the downloaded image (the worker is terminated next; this frees its disk early).
sudo rm -rf "$WORK"
result "{\"removed\":true}"
