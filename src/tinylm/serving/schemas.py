"""Request and response bodies of the HTTP API (they are also its OpenAPI schema).

The request model is built from the server's limits, so a text that is too long, a list that is too long, an
empty text or a wrong type is refused by validation (422) with a message naming the field, before any model work.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, model_validator

from tinylm.serving.settings import ServeSettings


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty (or only whitespace)")
    return text


def request_model(settings: ServeSettings) -> type[BaseModel]:
    """The POST /predict body for these limits: {"text": "..."} or {"texts": ["...", ...]}."""
    Text = Annotated[StrictStr, Field(max_length=settings.max_chars), AfterValidator(_not_blank)]

    class PredictRequest(BaseModel):
        """Exactly one of `text` (one string) and `texts` (a list of strings)."""

        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={"examples": [{"text": "Stocks rallied after the central bank held rates."},
                                            {"texts": ["Oil prices rose sharply.", "The team won the cup."]}]},
        )

        text: Text | None = Field(None, description=f"one text, 1 to {settings.max_chars} characters")
        texts: Annotated[list[Text], Field(min_length=1, max_length=settings.max_texts)] | None = Field(
            None, description=f"1 to {settings.max_texts} texts, each 1 to {settings.max_chars} characters")

        @model_validator(mode="after")
        def _exactly_one(self) -> PredictRequest:
            if (self.text is None) == (self.texts is None):
                raise ValueError("send either 'text' (one string) or 'texts' (a list of strings), not both or neither")
            return self

    return PredictRequest


class Prediction(BaseModel):
    label: str = Field(description="the most probable class")
    probabilities: dict[str, float] = Field(description="class name -> probability (a committee: its soft vote)")


class PredictResponse(Prediction):
    """The answer to {"text": ...}."""

    latency_ms: float = Field(description="time in the server, from a validated request to its answer")


class PredictBatchResponse(BaseModel):
    """The answer to {"texts": [...]}, in the order sent."""

    predictions: list[Prediction]
    latency_ms: float = Field(description="time in the server, from a validated request to its answer")


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer: a one-line `error`, and for validation errors the fields at fault."""

    error: str
    detail: list[ErrorDetail] | None = None


class HealthResponse(BaseModel):
    status: str
    waiting_texts: int
    stats: dict[str, Any]


class InfoResponse(BaseModel):
    model: str
    kind: str = Field(description="'model' (one fine-tuned BERT) or 'committee' (a soft committee)")
    members: int | None
    labels: list[str]
    runtime: str
    version: str = Field(description="tinylm version")
    max_length: int = Field(description="tokens read per text (longer texts are truncated)")
    limits: dict[str, Any]
    onnx_file: str | None = Field(None, description="the ONNX graph, with the onnx runtime")
