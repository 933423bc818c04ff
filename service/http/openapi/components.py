"""The document's named schemas: requests (derived from the request types where they exist),
answers, and the two error shapes."""

from __future__ import annotations

from service.access.keys import Role
from service.batches.records import BatchStatus
from service.http.native.jobs import LISTED
from service.http.openapi.schemas import (
    Schema,
    message,
    nullable,
    options,
    ref,
    request_schema,
    table_schema,
)
from service.jobs.kinds import JobKind
from service.jobs.records import Job, JobStatus
from service.jobs.requests import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    PullRequest,
    PushRequest,
)

_STRING, _INT, _NUMBER = {"type": "string"}, {"type": "integer"}, {"type": "number"}
_BOOL, _OBJECT = {"type": "boolean"}, {"type": "object"}


def _object(required: list[str], **properties: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def errors() -> dict[str, Schema]:
    return {
        "Error": _object(["error"], error=_STRING),
        "OpenAIError": _object(["error"], error=_object(
            ["message", "type"], message=_STRING, type=_STRING, param=nullable(_STRING),
            code=nullable(_STRING))),
    }


def ollama() -> dict[str, Schema]:
    pull = request_schema(PullRequest, ())
    pull["properties"]["name"] = nullable(_STRING) | {"description": "older name of `model`"}
    push = request_schema(PushRequest, ())
    push["properties"]["name"] = nullable(_STRING) | {"description": "older name of `model`"}
    embeddings = request_schema(EmbedRequest)
    embeddings["properties"] = {k: v for k, v in embeddings["properties"].items()
                                if k != "input"} | {"prompt": nullable(_STRING)}
    metrics = {k: _INT for k in ("total_duration", "load_duration", "prompt_eval_count",
                                 "prompt_eval_duration", "eval_count", "eval_duration")}
    reply = {"model": _STRING, "created_at": _STRING, "done": _BOOL, "done_reason": _STRING,
             "logprobs": _array(_OBJECT), **metrics}
    return {
        "Options": options(),
        "Message": message(),
        "GenerateRequest": request_schema(GenerateRequest),
        "ChatRequest": request_schema(ChatRequest),
        "EmbedRequest": request_schema(EmbedRequest),
        "EmbeddingsRequest": embeddings,
        "PullRequest": pull,
        "PushRequest": push,
        "CreateRequest": {"type": "object", "properties": {
            "model": _STRING, "name": _STRING, "modelfile": _STRING, "from": _STRING,
            "files": {"type": "object", "additionalProperties": _STRING},
            "adapters": {"type": "object", "additionalProperties": _STRING},
            "template": _STRING, "system": _STRING, "parameters": ref("Options"),
            "license": {"anyOf": [_STRING, _array(_STRING)]},
            "messages": _array(ref("Message")), "stream": _BOOL,
            "quantize": {**_STRING, "description": "write F16/BF16/F32 weights at this type "
                         "(q4_K_M, q8_0, ...) on a worker first"}}},
        "GenerateResponse": _object(["model", "response", "done"], response=_STRING,
                                    thinking=_STRING, **reply),
        "ChatResponse": _object(["model", "message", "done"], message=ref("Message"), **reply),
        "EmbedResponse": _object(["model", "embeddings"], model=_STRING,
                                 embeddings=_array(_array(_NUMBER)), **metrics),
        "Status": _object(["status"], status=_STRING),
        "SSEEvent": {"type": "object", "description": "one Server-Sent Event; its data is "
                     "JSON text (or [DONE], the last one under /v1)",
                     "properties": {"event": _STRING, "id": _STRING, "data": _STRING}},
        "ModelList": _object(["models"], models=_array(_object(
            ["name", "model", "size", "digest"], name=_STRING, model=_STRING,
            modified_at=_STRING, size=_INT, digest=_STRING, details=_OBJECT))),
        "RunningModels": _object(["models", "queued"], models=_array(_OBJECT),
                                 queued={"type": "object", "additionalProperties": _INT}),
        "ShowResponse": _object(["modelfile", "details"], modelfile=_STRING,
                                parameters=_STRING, template=_STRING, system=_STRING,
                                license=_STRING, details=_OBJECT, model_info=_OBJECT,
                                capabilities=_array(_STRING), modified_at=_STRING,
                                messages=_array(ref("Message"))),
    }


def openai() -> dict[str, Schema]:
    """/v1's shapes; the request fields are those service.http.openai.types reads."""
    sampling = {"model": _STRING, "stream": _BOOL, "stream_options": _OBJECT,
                "max_tokens": _INT, "max_completion_tokens": _INT, "temperature": _NUMBER,
                "top_p": _NUMBER, "frequency_penalty": _NUMBER, "presence_penalty": _NUMBER,
                "seed": _INT, "stop": {"anyOf": [_STRING, _array(_STRING)]}, "n": _INT}
    choice = {"index": _INT, "finish_reason": nullable(_STRING), "logprobs": {}}
    completion = {"id": _STRING, "object": _STRING, "created": _INT, "model": _STRING,
                  "usage": _OBJECT}
    times = {t: nullable(_INT) for t in ("created_at", "in_progress_at", "expires_at",
                                         "completed_at", "failed_at", "cancelled_at")}
    file = _object(["id", "object", "bytes", "filename", "purpose"], id=_STRING,
                   object=_STRING, bytes=_INT, created_at=_INT, filename=_STRING,
                   purpose=_STRING, status=_STRING)
    batch = _object(["id", "object", "endpoint", "status"], id=_STRING, object=_STRING,
                    endpoint=_STRING, status={"type": "string",
                                              "enum": [s.value for s in BatchStatus]},
                    input_file_id=_STRING, output_file_id=nullable(_STRING),
                    error_file_id=nullable(_STRING), request_counts=_OBJECT, **times)

    def page(item: str) -> Schema:
        return _object(["object", "data", "has_more"], object=_STRING,
                       data=_array(ref(item)), has_more=_BOOL,
                       first_id=nullable(_STRING), last_id=nullable(_STRING))

    return {
        "ChatCompletionRequest": _object(["model", "messages"], **sampling, messages=_array(
            _object(["role"], role=_STRING)), response_format=_OBJECT, tools=_array(_OBJECT),
            tool_choice={"anyOf": [{"type": "string", "enum": ["none", "auto", "required"]},
                                   _OBJECT]},
            logprobs=_BOOL, top_logprobs=_INT),
        "CompletionRequest": _object(["model", "prompt"], **sampling, prompt={
            "anyOf": [_STRING, _array(_STRING)]}, suffix=_STRING, logprobs=_INT),
        "EmbeddingRequest": _object(["model", "input"], model=_STRING, input={
            "anyOf": [_STRING, _array(_STRING)]}, encoding_format={
                "type": "string", "enum": ["float", "base64"]}, dimensions=_INT),
        "ChatCompletion": _object(["id", "object", "choices"], **completion,
                                  choices=_array(_object(["index", "message"], **choice,
                                                         message=_OBJECT))),
        "Completion": _object(["id", "object", "choices"], **completion,
                              choices=_array(_object(["index", "text"], **choice,
                                                     text=_STRING))),
        "EmbeddingList": _object(["object", "data", "model"], object=_STRING, model=_STRING,
                                 data=_array(_object(["index", "embedding"], index=_INT,
                                                     object=_STRING, embedding={"anyOf": [
                                                         _array(_NUMBER), _STRING]})),
                                 usage=_OBJECT),
        "OpenAIModel": _object(["id", "object"], id=_STRING, object=_STRING, created=_INT,
                               owned_by=_STRING),
        "OpenAIModelList": _object(["object", "data"], object=_STRING,
                                   data=_array(ref("OpenAIModel"))),
        "File": file,
        "FileList": page("File"),
        "FileUpload": _object(["file", "purpose"], file={"type": "string",
                                                         "format": "binary"},
                              purpose={"type": "string", "enum": ["batch"]}),
        "Deleted": _object(["id", "object", "deleted"], id=_STRING, object=_STRING,
                           deleted=_BOOL),
        "OpenAIBatchRequest": _object(["input_file_id", "endpoint", "completion_window"],
                                      input_file_id=_STRING, endpoint=_STRING,
                                      completion_window=_STRING, metadata=_OBJECT),
        "OpenAIBatch": batch,
        "OpenAIBatchList": page("OpenAIBatch"),
        **responses(),
    }


def native() -> dict[str, Schema]:
    links = _object(["self", "events"], self=_STRING, events=_STRING)
    status = {"type": "string", "enum": [s.value for s in JobStatus]}
    row = table_schema(Job.__table__, {"status": status, "output": _STRING,
                                       "position": nullable(_INT), "links": links})
    listed = {k: row["properties"][k] for k in LISTED}
    counts = _object(["total"], **{k: _INT for k in (
        "total", "pending", "queued", "running", "succeeded", "failed", "invalid",
        "cancelled", "done")})
    batch = _object(["id", "status", "counts"], id=_STRING, status=_STRING,
                    endpoint=_STRING, model=nullable(_STRING), counts=counts)
    kinds = {"type": "string", "enum": [k.value for k in JobKind], "default": "generate"}
    return {
        "JobRequest": {"type": "object", "required": ["model"], "description": (
            "the fields of the kind's request (GenerateRequest, ChatRequest, EmbedRequest "
            "or PullRequest), plus kind, priority, batch and device"),
            "properties": {"kind": kinds, "model": _STRING,
                           "priority": {"type": "integer", "minimum": 0, "maximum": 9},
                           "batch": _STRING,
                           "device": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$",
                                      "description": "the device queue (cpu, gpu, ...) or "
                                      "'any': whichever worker holds the model"}}},
        "JobSummary": _object(["id", "status", "links"], id=_STRING, status=status,
                              links=links),
        "Job": row,
        "JobList": _object(["jobs", "next_cursor"], next_cursor=nullable(_STRING),
                           jobs=_array(_object(["id", "status", "links"], **listed,
                                               error=nullable(_STRING),
                                               preview=nullable(_STRING),
                                               position=nullable(_INT), links=links))),
        "Workers": _object(["workers"], workers=_array(_object(
            ["worker", "models", "heartbeat_age", "alive"], worker=_STRING,
            node=nullable(_STRING), host=_STRING, pid=_INT, device=_STRING,
            queues=_array(_STRING), own_queue=_STRING, slots=_INT, threads=_INT,
            running=_INT, free_slots=_INT, models=_array(_STRING), heartbeat_age=_NUMBER,
            alive=_BOOL))),
        "Report": _object(["rows"], rows=_array(_OBJECT), concurrency=_STRING,
                          series=_array(_OBJECT), bucket_s=_INT),
        "Batch": batch,
        "BatchList": _object(["batches"], batches=_array(ref("Batch"))),
        **keys(),
    }


def keys() -> dict[str, Schema]:
    """API keys as /keys lists them (never the secret) and as POST /keys makes them."""
    role = {"type": "string", "enum": [r.value for r in Role]}
    models = nullable(_array(_STRING))
    stamp = nullable(_STRING)
    key = _object(["id", "name", "role"], id=_STRING, name=_STRING, role=role, models=models,
                  prefix=_STRING, created_at=_STRING, last_used_at=stamp, revoked_at=stamp)
    return {
        "KeyRequest": _object(["name"], name={**_STRING, "minLength": 1, "maxLength": 255},
                              role={**role, "default": "user"}, models=models),
        "Key": key,
        "NewKey": {**key, "required": [*key["required"], "key"], "properties": {
            **key["properties"], "key": {**_STRING, "description": "the secret, shown once"}}},
        "KeyList": _object(["keys"], keys=_array(ref("Key"))),
        "Me": _object(["id", "name", "role", "models", "keys_required"], id=nullable(_STRING),
                      name=_STRING, role=role, models=models, keys_required=_BOOL),
    }


def responses() -> dict[str, Schema]:
    """/v1/responses: the fields service.http.openai.responses_types reads or accepts
    (any other is a 400), and the Response object responses_reply builds."""
    text = nullable(_STRING)
    part = _object(["type"], type={"type": "string", "enum": ["input_text", "output_text"]},
                   text=_STRING)
    parts = {"anyOf": [_STRING, {**_array(part), "minItems": 1}]}
    message_in = _object(["role"], type={"type": "string", "enum": ["message"]},
                         role={"type": "string", "enum": ["user", "system", "developer",
                                                          "assistant"]}, content=parts)
    call_in = _object(["type", "call_id", "name"], type={"type": "string",
                                                         "enum": ["function_call"]},
                      call_id=_STRING, name=_STRING, arguments=_STRING)
    output_in = _object(["type", "call_id", "output"], type={
        "type": "string", "enum": ["function_call_output"]}, call_id=_STRING, output=parts)
    reasoning_in = _object(["type"], type={"type": "string", "enum": ["reasoning"]},
                           content=_array(_OBJECT), summary=_array(_OBJECT))
    item = {"anyOf": [message_in, call_in, output_in, reasoning_in]}
    tool = _object(["type", "name"], type={"type": "string", "enum": ["function"]},
                   name=_STRING, description=text, parameters=nullable(_OBJECT),
                   strict=nullable(_BOOL))
    named = _object(["type", "name"], type={"type": "string", "enum": ["function"]},
                    name=_STRING)
    output_format = _object(["type"], type={"type": "string", "enum": [
        "text", "json_object", "json_schema"]}, name=_STRING, schema=_OBJECT, strict=_BOOL)
    unsupported = {"description": "refused unless absent, null, false, 0 or empty"}
    request = _object(
        ["model", "input"], model=_STRING,
        input={"anyOf": [_STRING, {**_array(item), "minItems": 1}]},
        instructions=text, previous_response_id=text | {"description": "resp_<job id>"},
        max_output_tokens=nullable({"type": "integer", "minimum": 1}),
        temperature=nullable({"type": "number", "minimum": 0, "maximum": 2}),
        top_p=nullable({"type": "number", "minimum": 0, "maximum": 1}),
        stream=nullable(_BOOL), text=nullable(_object([], format=output_format)),
        truncation=nullable({"type": "string", "enum": ["auto", "disabled"]}),
        metadata=nullable({"type": "object", "additionalProperties": _STRING}),
        store=nullable(_BOOL), user=text, parallel_tool_calls=nullable(_BOOL),
        tools=nullable(_array(tool)),
        tool_choice=nullable({"anyOf": [
            {"type": "string", "enum": ["auto", "none", "required"]}, named]}),
        reasoning=nullable(_object([], effort=text, summary=text)),
        include=nullable(_array(_STRING)),
        top_logprobs=nullable({"type": "integer", "minimum": 0, "maximum": 20}),
        stream_options=nullable(_OBJECT), safety_identifier=text, prompt_cache_key=text,
        service_tier=text, max_tool_calls=nullable(_INT),
        **{name: unsupported for name in ("background", "conversation", "prompt")})
    content = _object(["type", "text"], type=_STRING, text=_STRING,
                      annotations=_array(_OBJECT), logprobs=_array(_OBJECT))
    output_item = _object(["type", "id"], type={"type": "string", "enum": [
        "message", "reasoning", "function_call"]}, id=_STRING, status=_STRING, role=_STRING,
        content=_array(content), summary=_array(_OBJECT), call_id=_STRING, name=_STRING,
        arguments=_STRING)
    status = {"type": "string", "enum": ["completed", "incomplete", "cancelled", "queued",
                                         "in_progress", "failed"]}
    response = _object(
        ["id", "object", "created_at", "status", "model", "output", "parallel_tool_calls",
         "tool_choice", "tools"], id=_STRING, object=_STRING, created_at=_INT, status=status,
        model=_STRING, output=_array(output_item), usage=nullable(_OBJECT),
        error=nullable(_OBJECT), incomplete_details=nullable(_OBJECT), instructions=text,
        metadata=_OBJECT, parallel_tool_calls=_BOOL,
        tool_choice={"anyOf": [_STRING, named]}, tools=_array(tool), temperature=_NUMBER,
        top_p=_NUMBER, previous_response_id=text, max_output_tokens=nullable(_INT))
    input_list = _object(["object", "data", "has_more"], object=_STRING,
                         data=_array(_OBJECT), has_more=_BOOL, first_id=text, last_id=text)
    return {"ResponseRequest": {**request, "additionalProperties": False},
            "Response": response, "ResponseInputItems": input_list}
