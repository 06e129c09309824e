"""The geolocation task, declared once (``tasks.spec.TaskSpec``), with its ``partition`` command."""

from __future__ import annotations

from datasets.geo_photos import GeoPhotosDataModule
from tasks.geolocation import partition
from tasks.geolocation.module import GeolocationModule
from tasks.geolocation.writer import GeolocationWriter
from tasks.spec import TaskSpec

TASK = TaskSpec(
    name="geolocation",
    module=GeolocationModule,
    data=GeoPhotosDataModule,
    monitor="acc_750km",
    default_steps=1000,  # 20 epochs of the 1620-photo demo at batch 32
    links=(("data.num_cells", "model.num_cells"), ("data.coarse_num_cells", "model.coarse_num_cells")),
    callbacks=(GeolocationWriter,),
    commands={"partition": partition.main},
)
