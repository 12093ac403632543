"""The Carbon Aware SDK WebAPI's answers (casdk_routes.py) as pydantic models with its field names
and casing, serialised once, at the edge. Exactly the SDK's fields and nothing more: its
generated clients (openapi-generator's Java client) refuse an answer with a field they do not know.

Names, casing and value formats are those of the SDK's DTOs (Green-Software-Foundation/
carbon-aware-sdk v1.8: GSF.CarbonAware.Models.EmissionsData and Location, and
src/CarbonAware.WebApi/src/Models/EmissionsForecastDTO.cs, EmissionsDataDTO.cs,
CarbonIntensityDTO.cs): a DateTimeOffset as ISO 8601 with its offset (`2022-06-01T14:45:00+00:00`),
EmissionsData.duration as a .NET TimeSpan (`01:00:00`, `1.00:00:00` past a day), the forecast's
EmissionsDataDTO.duration as whole minutes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Optional

from pydantic import BaseModel, ConfigDict, PlainSerializer, TypeAdapter, WithJsonSchema

from carbon_optimizer.data.cloud_regions import CloudRegion


def offset_time(moment: datetime) -> str:
    """A DateTimeOffset as System.Text.Json writes it: ISO 8601 in the value's own offset."""
    return moment.isoformat()


def timespan(seconds: int) -> str:
    """A .NET TimeSpan's constant ("c") format: [d.]hh:mm:ss."""
    days, rest = divmod(int(seconds), 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}.{clock}" if days else clock


OffsetTime = Annotated[datetime, PlainSerializer(offset_time, return_type=str, when_used="json"),
                       WithJsonSchema({"type": "string", "format": "date-time",
                                       "examples": ["2022-06-01T14:45:00+00:00"]})]
TimeSpanSeconds = Annotated[int, PlainSerializer(timespan, return_type=str, when_used="json"),
                            WithJsonSchema({"type": "string", "format": "date-span",
                                            "pattern": r"^(\d+\.)?\d{2}:\d{2}:\d{2}$",
                                            "examples": ["01:00:00"]})]


class SdkModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class EmissionsData(SdkModel):
    """One measured point (bylocation, bylocations, bylocations/best)."""
    location: str
    time: OffsetTime
    rating: float
    duration: TimeSpanSeconds


class EmissionsDataDTO(SdkModel):
    """One forecast point, or the mean of a window of `duration` minutes from `timestamp`."""
    location: str
    timestamp: OffsetTime
    duration: int
    value: float


class EmissionsForecastDTO(SdkModel):
    generatedAt: OffsetTime
    requestedAt: OffsetTime
    location: str
    dataStartAt: OffsetTime
    dataEndAt: OffsetTime
    windowSize: int
    optimalDataPoints: list[EmissionsDataDTO]
    forecastData: list[EmissionsDataDTO]


class CarbonIntensityDTO(SdkModel):
    location: str
    startTime: OffsetTime
    endTime: OffsetTime
    carbonIntensity: float


class Location(SdkModel):
    latitude: Optional[float]
    longitude: Optional[float]
    name: str

    @classmethod
    def of(cls, name: str, region: CloudRegion) -> "Location":
        return cls(latitude=region.latitude, longitude=region.longitude, name=name)


class ValidationProblemDetails(BaseModel):
    """What every 4xx and 5xx of these routes is (casdk_params.Problem writes it)."""
    model_config = ConfigDict(extra="allow")
    type: Optional[str] = None
    title: Optional[str] = None
    status: Optional[int] = None
    detail: Optional[str] = None
    traceId: Optional[str] = None
    errors: dict[str, list[str]] = {}


EMISSIONS_DATA_LIST = TypeAdapter(list[EmissionsData])
FORECAST_LIST = TypeAdapter(list[EmissionsForecastDTO])
INTENSITY_LIST = TypeAdapter(list[CarbonIntensityDTO])
LOCATIONS = TypeAdapter(dict[str, Location])
