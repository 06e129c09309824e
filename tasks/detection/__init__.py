"""Object detection on COCO (Table 13): SSD300 and Faster R-CNN on the shared MobileNet backbone."""
