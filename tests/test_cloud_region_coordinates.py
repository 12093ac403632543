"""The coordinates of the cloud-region table: every row has them, in range, and inside a rough box
around the country of the row's zone (so a swapped sign or a latitude/longitude mix-up shows);
tables and overrides without them still load."""

from pathlib import Path

import pytest

from carbon_optimizer.data.cloud_regions import TABLE_PATH, RegionTable, read_table

# Rough boxes (latitude min, max, longitude min, max) around each country the table's zones are
# in (the zone key's first part), generous by a fraction of a degree; mainland only, where the
# regions are (US: the contiguous states).
COUNTRY_BOXES = {
    "AE": (22.0, 27.0, 51.0, 57.0), "AU": (-44.0, -10.0, 112.0, 154.0), "BE": (49.4, 51.6, 2.4, 6.5),
    "BH": (25.5, 26.5, 50.3, 50.9), "BR": (-34.0, 6.0, -74.0, -34.0), "CA": (41.0, 84.0, -141.0, -52.0),
    "CH": (45.7, 47.9, 5.9, 10.6), "CL": (-56.0, -17.0, -76.0, -66.0), "DE": (47.2, 55.1, 5.8, 15.1),
    "ES": (35.9, 43.9, -9.4, 3.4), "FI": (59.6, 70.1, 20.0, 31.6), "FR": (41.3, 51.1, -5.2, 9.6),
    "GB": (49.9, 58.7, -8.2, 1.8), "HK": (22.1, 22.6, 113.8, 114.5), "ID": (-11.0, 6.0, 95.0, 141.0),
    "IE": (51.4, 55.4, -10.5, -5.9), "IL": (29.4, 33.4, 34.2, 35.9), "IN": (6.7, 35.5, 68.0, 97.4),
    "IT": (36.6, 47.1, 6.6, 18.5), "JP": (24.0, 45.6, 122.9, 145.9), "KR": (33.1, 38.6, 124.6, 131.9),
    "MY": (0.8, 7.4, 99.6, 119.3), "NL": (50.7, 53.6, 3.3, 7.3), "NO": (57.9, 71.2, 4.6, 31.1),
    "NZ": (-47.3, -34.4, 166.4, 178.6), "PL": (49.0, 54.9, 14.1, 24.2), "QA": (24.4, 26.2, 50.7, 51.7),
    "SA": (16.3, 32.2, 34.5, 55.7), "SE": (55.3, 69.1, 11.0, 24.2), "SG": (1.15, 1.48, 103.6, 104.1),
    "TW": (21.9, 25.3, 120.0, 122.0), "US": (24.5, 49.4, -125.0, -66.9), "ZA": (-35.0, -22.0, 16.4, 33.0),
}


def test_every_row_has_coordinates_in_range_and_in_its_zones_country():
    regions = read_table()
    assert len(regions) == len(TABLE_PATH.read_text(encoding="utf-8").splitlines()) - 1
    outside = []
    for region in regions.values():
        assert region.latitude is not None and region.longitude is not None, region.name
        assert -90 <= region.latitude <= 90 and -180 <= region.longitude <= 180, region.name
        assert round(region.latitude, 2) == region.latitude and round(region.longitude, 2) == region.longitude
        south, north, west, east = COUNTRY_BOXES[region.zone.split("-")[0]]
        if not (south <= region.latitude <= north and west <= region.longitude <= east):
            outside.append((region.name, region.zone, region.latitude, region.longitude))
    assert outside == []


def test_regions_named_by_the_same_city_share_its_coordinates():
    regions = read_table()
    by_place = {}
    for region in regions.values():
        by_place.setdefault(region.location, set()).add((region.latitude, region.longitude))
    assert {place: spots for place, spots in by_place.items() if len(spots) > 1} == {}
    # And a few well-known ones, to the 2 decimals the table keeps.
    assert (regions["aws:eu-west-3"].latitude, regions["aws:eu-west-3"].longitude) == (48.86, 2.35)
    assert (regions["gcp:australia-southeast1"].latitude,
            regions["gcp:australia-southeast1"].longitude) == (-33.87, 151.21)
    assert (regions["azure:brazilsouth"].latitude, regions["azure:brazilsouth"].longitude) == (-23.55, -46.63)


HEADER = "provider,region,zone,location,latitude,longitude,source\n"
SOURCE = "https://example.com/regions"


@pytest.mark.parametrize("latitude,longitude,message", [
    ("91", "0", "outside"), ("0", "-180.5", "outside"), ("48.86", "", "only one"),
    ("nan", "2.35", "outside"), ("north", "2.35", "not numbers")])
def test_bad_coordinates_fail_loading_and_name_the_row(tmp_path: Path, latitude, longitude, message):
    table = tmp_path / "regions.csv"
    table.write_text(HEADER + f"aws,xx-east-1,FR,Paris,{latitude},{longitude},{SOURCE}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message) as raised:
        read_table(table)
    assert "line 2" in str(raised.value)


def test_a_table_without_coordinates_and_overrides_still_load(tmp_path: Path):
    table = tmp_path / "regions.csv"
    table.write_text(f"provider,region,zone,location,source\naws,xx-east-1,FR,Paris,{SOURCE}\n")
    assert read_table(table)["aws:xx-east-1"].latitude is None
    regions = RegionTable({"aws:eu-west-1": "GB", "acme:dc-1": "FR"})
    moved, added = regions.get("aws:eu-west-1"), regions.get("acme:dc-1")
    assert moved.zone == "GB" and (moved.latitude, moved.longitude) == (53.35, -6.26)  # still Dublin
    assert added.zone == "FR" and (added.latitude, added.longitude) == (None, None)
