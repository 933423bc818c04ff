"""Every route's operation, face by face, with its request and answer shapes.

tests/test_openapi.py holds this table to the app's URL map both ways, so a route added
without a line here (or a line left behind by a removed route) fails the suite.
"""

from __future__ import annotations

from typing import Any

from service.http.openapi.operations import (
    answer,
    header,
    json_body,
    json_content,
    operation,
    path_param,
    query,
    streamed,
)
from service.http.openapi.schemas import ref

Paths = dict[str, dict[str, Any]]

_MODEL_NAME = {"type": "object", "properties": {"model": {"type": "string"},
                                                "name": {"type": "string"}},
               "description": "the model's name in `model` (or Ollama's older `name`)"}
_DIGEST = path_param("digest", "sha256:<64 hex digits>")
_JOB_ID = path_param("job_id", "the job's id, as POST /jobs answered it")
_BATCH_ID = path_param("batch_id", "the batch's id")
_FILE_ID = path_param("file_id", "the file's id")
_RESPONSE_ID = path_param("response_id", "resp_<job id>")
_IDEMPOTENCY = header("Idempotency-Key", "a repeated key answers with what the first request "
                      "made instead of making it again")
_EMPTY = answer("done, with an empty body")


def console() -> Paths:
    up = {"200": answer("corral is running", {"text/plain": {"schema": {"type": "string"}}}),
          "302": answer("a browser (which prefers text/html) is sent on to /ui/")}
    page = {"200": answer("the console's page", {"text/html": {"schema": {"type": "string"}}})}
    return {"/": {"get": operation("Say the server is up", "console", up),
                  "head": operation("Say the server is up, without a body", "console",
                                    {"200": answer("corral is running")})},
            "/openapi.json": {"get": operation("This document", "console", {"200": answer(
                "the OpenAPI document", json_content({"type": "object"}))})},
            "/ui/": {"get": operation("The operations console (an HTML page)", "console", page)},
            "/ui/{rest}": {"get": operation(
                "The console at one of its views (the same HTML page)", "console", page,
                parameters=[path_param("rest", "the view's path inside the console")])}}


def ollama() -> Paths:
    tag = "ollama"
    return {
        "/api/generate": {"post": operation(
            "Generate a completion for a prompt", tag,
            {"200": answer("NDJSON chunks, or one object when stream is false",
                           streamed(ref("GenerateResponse")))},
            errors=(404,), body=json_body(ref("GenerateRequest")))},
        "/api/chat": {"post": operation(
            "Answer the next message of a chat", tag,
            {"200": answer("NDJSON chunks, or one object when stream is false",
                           streamed(ref("ChatResponse")))},
            errors=(404,), body=json_body(ref("ChatRequest")))},
        "/api/embed": {"post": operation(
            "Embed one or more inputs", tag,
            {"200": answer("one vector per input", json_content(ref("EmbedResponse")))},
            errors=(404,), body=json_body(ref("EmbedRequest")))},
        "/api/embeddings": {"post": operation(
            "Embed one prompt (Ollama's older endpoint)", tag,
            {"200": answer("the vector", json_content({
                "type": "object", "required": ["embedding"],
                "properties": {"embedding": {"type": "array", "items": {"type": "number"}}}}))},
            errors=(404,), body=json_body(ref("EmbeddingsRequest")))},
        "/api/tags": {"get": operation(
            "List the models in the store", tag,
            {"200": answer("the models", json_content(ref("ModelList")))})},
        "/api/version": {"get": operation(
            "Say corral's version", tag, {"200": answer("the version", json_content({
                "type": "object", "required": ["version"],
                "properties": {"version": {"type": "string"}}}))})},
        "/api/ps": {"get": operation(
            "List the models loaded on any live worker, and what waits", tag,
            {"200": answer("loaded models and queued jobs per model",
                           json_content(ref("RunningModels")))})},
        "/api/workers": {"get": operation(
            "List every worker heard from lately, alive or gone silent", tag,
            {"200": answer("the fleet", json_content(ref("Workers")))})},
        "/api/pull": {"post": operation(
            "Pull a model from a registry, Hugging Face or a URL", tag,
            {"200": answer("NDJSON progress lines, or the last one when stream is false",
                           streamed(ref("Status")))},
            body=json_body(ref("PullRequest")))},
        "/api/push": {"post": operation(
            "Push a stored model to the registry its name names", tag,
            {"200": answer("NDJSON progress lines, or the last one when stream is false",
                           streamed(ref("Status")))},
            errors=(404,), body=json_body(ref("PushRequest")))},
        "/api/blobs/{digest}": {
            "head": operation("Say whether a blob is in the store", tag,
                              {"200": answer("the blob is there")}, errors=(400, 404),
                              parameters=[_DIGEST]),
            "post": operation(
                "Upload a blob; its content must have the digest", tag,
                {"200": answer("the blob was there already"), "201": answer("stored")},
                errors=(400, 413), parameters=[_DIGEST],
                body={"required": True, "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}}})},
        "/api/create": {"post": operation(
            "Create a model from a Modelfile or Ollama's fields", tag,
            {"200": answer("NDJSON status lines, or the last one when stream is false",
                           streamed(ref("Status")))},
            errors=(404,), body=json_body(ref("CreateRequest")))},
        "/api/show": {"post": operation(
            "Show a model's Modelfile, parameters, template and GGUF header", tag,
            {"200": answer("the model", json_content(ref("ShowResponse")))},
            errors=(404,), body=json_body(_MODEL_NAME))},
        "/api/copy": {"post": operation(
            "Copy a model under a new name", tag, {"200": _EMPTY}, errors=(404,),
            body=json_body({"type": "object", "required": ["source", "destination"],
                            "properties": {"source": {"type": "string"},
                                           "destination": {"type": "string"}}}))},
        "/api/delete": {"delete": operation(
            "Delete a model (unloading it everywhere first)", tag, {"200": _EMPTY},
            errors=(404,), body=json_body(_MODEL_NAME))},
    }


def openai() -> Paths:
    tag, errors = "openai", "OpenAIError"

    def op(summary: str, ok: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return operation(summary, tag, ok, error_schema=errors, **kwargs)

    limit = query("limit", "page size", {"type": "integer", "minimum": 1})
    after = query("after", "the id the page starts after")
    return {
        "/v1/models": {"get": op("List the models", {"200": answer(
            "the models", json_content(ref("OpenAIModelList")))})},
        "/v1/models/{name}": {"get": op(
            "Describe a model", {"200": answer("the model", json_content(ref("OpenAIModel")))},
            errors=(404,), parameters=[path_param("name", "the model's name")])},
        "/v1/chat/completions": {"post": op(
            "Create a chat completion",
            {"200": answer("a chat.completion, or SSE chunks ending in `data: [DONE]`",
                           streamed(ref("ChatCompletion"), "text/event-stream", ref("SSEEvent")))},
            errors=(404,), body=json_body(ref("ChatCompletionRequest")))},
        "/v1/completions": {"post": op(
            "Create a completion",
            {"200": answer("a text_completion, or SSE chunks ending in `data: [DONE]`",
                           streamed(ref("Completion"), "text/event-stream", ref("SSEEvent")))},
            errors=(404,), body=json_body(ref("CompletionRequest")))},
        "/v1/responses": {"post": op(
            "Create a model response (text, reasoning, function calls)",
            {"200": answer("a response, or SSE events from response.created to "
                           "response.completed (or .incomplete, .failed)",
                           streamed(ref("Response"), "text/event-stream", ref("SSEEvent")))},
            errors=(404,), body=json_body(ref("ResponseRequest")))},
        "/v1/responses/{response_id}": {
            "get": op("Retrieve a stored response",
                      {"200": answer("the response", json_content(ref("Response")))},
                      errors=(404,), parameters=[_RESPONSE_ID]),
            "delete": op("Delete a stored response (its text; the job's counts stay)",
                         {"200": answer("deleted", json_content(ref("Deleted")))},
                         errors=(404, 409), parameters=[_RESPONSE_ID])},
        "/v1/responses/{response_id}/input_items": {"get": op(
            "List the input items a response was given",
            {"200": answer("a page of items", json_content(ref("ResponseInputItems")))},
            errors=(400, 404), parameters=[
                _RESPONSE_ID, limit, after,
                query("order", "item order", {"type": "string", "enum": ["asc", "desc"]})])},
        "/v1/embeddings": {"post": op(
            "Create embeddings", {"200": answer("the vectors", json_content(ref("EmbeddingList")))},
            errors=(404,), body=json_body(ref("EmbeddingRequest")))},
        "/v1/files": {
            "post": op("Upload a batch input file (JSONL)",
                       {"200": answer("the file", json_content(ref("File")))},
                       errors=(400, 413), body={"required": True, "content": {
                           "multipart/form-data": {"schema": ref("FileUpload")}}}),
            "get": op("List files", {"200": answer("a page of files", json_content(
                ref("FileList")))}, errors=(400, 404), parameters=[
                    limit, after, query("purpose", "only files of this purpose"),
                    query("order", "by creation time", {"type": "string",
                                                        "enum": ["asc", "desc"]})])},
        "/v1/files/{file_id}": {
            "get": op("Describe a file", {"200": answer("the file", json_content(ref("File")))},
                      errors=(404,), parameters=[_FILE_ID]),
            "delete": op("Delete a file", {"200": answer("deleted", json_content(
                ref("Deleted")))}, errors=(404,), parameters=[_FILE_ID])},
        "/v1/files/{file_id}/content": {"get": op(
            "Read a file's bytes (a batch's output and error files are rendered on read)",
            {"200": answer("the bytes", {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}})},
            errors=(404,), parameters=[_FILE_ID])},
        "/v1/batches": {
            "post": op("Create a batch from an uploaded file",
                       {"200": answer("the batch", json_content(ref("OpenAIBatch")))},
                       errors=(404,), body=json_body(ref("OpenAIBatchRequest"))),
            "get": op("List batches", {"200": answer("a page of batches", json_content(
                ref("OpenAIBatchList")))}, errors=(400, 404), parameters=[limit, after])},
        "/v1/batches/{batch_id}": {"get": op(
            "Describe a batch", {"200": answer("the batch", json_content(ref("OpenAIBatch")))},
            errors=(404,), parameters=[_BATCH_ID])},
        "/v1/batches/{batch_id}/cancel": {"post": op(
            "Cancel a batch", {"200": answer("the batch", json_content(ref("OpenAIBatch")))},
            errors=(404, 409), parameters=[_BATCH_ID])},
    }


def native() -> Paths:
    tag = "jobs"
    job = {"200": answer("the job", json_content(ref("Job")))}
    time = {"type": "string", "description": "ISO 8601"}
    return {
        "/jobs": {
            "post": operation(
                "Queue a job; a repeated Idempotency-Key answers with the job it made",
                tag, {"202": answer("queued", json_content(ref("JobSummary"))),
                      "200": answer("made before with this Idempotency-Key",
                                    json_content(ref("JobSummary")))},
                errors=(404,), parameters=[_IDEMPOTENCY], body=json_body(ref("JobRequest"))),
            "get": operation(
                "List jobs newest first, as summaries", tag,
                {"200": answer("a page of jobs", json_content(ref("JobList")))},
                errors=(400,), parameters=[
                    query("status", "comma-separated statuses"), query("model", "model name"),
                    query("batch", "batch id"), query("since", "created at or after", time),
                    query("until", "created before", time),
                    query("limit", "page size", {"type": "integer", "minimum": 1,
                                                 "maximum": 500}),
                    query("cursor", "next_cursor of the page before")])},
        "/jobs/report": {"get": operation(
            "Throughput by model and concurrency, from the job history", tag,
            {"200": answer("the report", json_content(ref("Report")))}, errors=(400,),
            parameters=[query("since", "an ISO 8601 time or a duration such as 1h"),
                        query("model", "model name")])},
        "/jobs/{job_id}": {
            "get": operation("Describe a job: status, position, output so far, metrics", tag,
                             job, errors=(404,), parameters=[_JOB_ID]),
            "delete": operation(
                "Cancel a job; a running one keeps its partial output", tag,
                {**job, "202": answer("asked to stop; not stopped yet",
                                      json_content(ref("Job")))},
                errors=(404, 409), parameters=[_JOB_ID])},
        "/jobs/{job_id}/events": {"get": operation(
            "Follow a job's events as Server-Sent Events", tag,
            {"200": answer("token, status and done events", {"text/event-stream": {
                "schema": ref("SSEEvent")}})},
            errors=(400, 404), parameters=[
                _JOB_ID, header("Last-Event-ID", "resume after this event id"),
                query("after", "resume after this event id")])},
        "/batches": {
            "post": operation(
                "Start a batch from a file of prompts sent as the body", "batches",
                {"201": answer("started", json_content(ref("Batch"))),
                 "200": answer("made before with this Idempotency-Key",
                               json_content(ref("Batch")))},
                errors=(400, 404, 413), parameters=[
                    _IDEMPOTENCY, header("X-Filename", "the file's name"),
                    query("model", "the model of lines that name none"),
                    query("priority", "0 to 9", {"type": "integer", "minimum": 0,
                                                 "maximum": 9})],
                body={"required": True, "content": {
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "text/plain": {"schema": {"type": "string"}}}}),
            "get": operation(
                "List batches newest first", "batches",
                {"200": answer("the batches", json_content(ref("BatchList")))},
                errors=(400, 404), parameters=[
                    query("after", "the id the page starts after"),
                    query("limit", "page size", {"type": "integer", "minimum": 1,
                                                 "maximum": 100}),
                    query("idempotency_key", "the batch made with this key")])},
        "/batches/{batch_id}": {"get": operation(
            "Describe a batch", "batches", {"200": answer("the batch", json_content(
                ref("Batch")))}, errors=(404,), parameters=[_BATCH_ID])},
        "/batches/{batch_id}/cancel": {"post": operation(
            "Cancel a batch", "batches", {"200": answer("the batch", json_content(
                ref("Batch")))}, errors=(404, 409), parameters=[_BATCH_ID])},
        "/batches/{batch_id}/results": {"get": operation(
            "One JSON line per input line, in input order", "batches",
            {"200": answer("JSONL", {"application/x-ndjson": {"schema": {"type": "string"}}})},
            errors=(404,), parameters=[_BATCH_ID])},
        **keys(),
        **metrics(),
    }


def metrics() -> Paths:
    """/metrics, for Prometheus: an admin key when keys are on (a bearer token in the scrape
    config)."""
    text = {"text/plain": {"schema": {"type": "string", "description": (
        "Prometheus' text format 0.0.4: jobs finished, tokens and latency histograms by model "
        "(counted in Redis across every process), jobs queued and running, queue depth by "
        "queue and priority, loaded models, workers and their slots")}}}
    return {"/metrics": {"get": operation("corral's figures for a Prometheus scrape",
                                          "metrics", {"200": answer("the figures", text)})}}


def keys() -> Paths:
    """/keys, for admin keys (and anyone while keys are off on loopback)."""
    key = {"200": answer("the key, revoked now", json_content(ref("Key")))}
    name = path_param("name_or_id", "the key's id or name")
    return {
        "/keys": {
            "get": operation("List the unrevoked keys (never their secrets)", "keys",
                             {"200": answer("the keys", json_content(ref("KeyList")))}),
            "post": operation("Create a key; its secret is in this answer only", "keys",
                              {"201": answer("made", json_content(ref("NewKey")))},
                              errors=(409,), body=json_body(ref("KeyRequest")))},
        "/keys/me": {"get": operation(
            "The key this request carries (any key): name, role, models, and whether keys are "
            "required (without them: the local admin, id null)", "keys",
            {"200": answer("who is asking", json_content(ref("Me")))})},
        "/keys/{name_or_id}": {"delete": operation("Revoke a key", "keys", key,
                                                    errors=(404,), parameters=[name])},
    }
