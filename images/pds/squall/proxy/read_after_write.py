"""Read-after-write: the user's own newest writes in the AppView's answers.

The AppView indexes a repo from the relay's firehose, a moment after the PDS committed it. A
client that posts, replies or edits its profile and reads right away would otherwise be shown the
world without its write. As the reference PDS does, for the methods of ``MUNGED`` the AppView's
``atproto-repo-rev`` header says how far it has indexed the caller's repo; when the caller has
newer ``app.bsky.feed.post`` / ``app.bsky.actor.profile`` records here (at most
``MAX_LOCAL_RECORDS``), the answer is rewritten:

* ``getTimeline``, ``getAuthorFeed`` (the caller's own feed, first page): the newer posts are
  inserted in time order, and the caller's author views refreshed from the newer profile;
* ``getPostThread``: newer replies are inserted under their parent; when the AppView does not
  know the requested post at all (``NotFound``) and it is one of the caller's newer posts, the
  thread is built here (newer local parents included) and the rest of the parent chain asked of the
  AppView;
* ``getActorLikes``: the caller's author views in the liked posts are refreshed;
* ``getProfile`` / ``getProfiles``: the caller's name, description, avatar and banner.

The rewritten answer carries ``Atproto-Upstream-Lag`` (milliseconds since the oldest newer local
record). An answer is left untouched when the AppView is current, when the caller has nothing
newer, when the rev is older than the account here (not comparable: it came from the previous PDS) or
when the body is not the expected shape. Every view built here is checked against the app.bsky
view lexicons before it is used; one that does not validate is left out.

Image URLs follow ``PDS_BSKY_APP_VIEW_CDN_URL_PATTERN`` (kind, DID, CID), else this PDS's own
``com.atproto.sync.getBlob``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import quote

import httpx

from ..store.accounts import get_by_did
from ..atproto.tid import is_valid_tid, tid_timestamp
from ..atproto.lexicon import Lexicons, LexiconNotFoundError, LexiconSchemaError, LexiconValidationError
from ..errors import UpstreamError
from ..repo import reader
from ..store import repos as repos_store

POST = "app.bsky.feed.post"
PROFILE = "app.bsky.actor.profile"
MAX_LOCAL_RECORDS = 10  # as the reference: a bounded look at what the AppView has not seen yet
MAX_GET_POSTS = 25
CLOCK_SLACK = 1.0  # seconds between an account's first rev and its created_at

TIMELINE = "app.bsky.feed.getTimeline"
AUTHOR_FEED = "app.bsky.feed.getAuthorFeed"
POST_THREAD = "app.bsky.feed.getPostThread"
ACTOR_LIKES = "app.bsky.feed.getActorLikes"
GET_PROFILE = "app.bsky.actor.getProfile"
GET_PROFILES = "app.bsky.actor.getProfiles"
GET_POSTS = "app.bsky.feed.getPosts"
MUNGED = frozenset({TIMELINE, AUTHOR_FEED, POST_THREAD, ACTOR_LIKES, GET_PROFILE, GET_PROFILES})

FEED_DEFS = "app.bsky.feed.defs"
POST_VIEW = f"{FEED_DEFS}#postView"
THREAD_VIEW = f"{FEED_DEFS}#threadViewPost"
NOT_FOUND_POST = f"{FEED_DEFS}#notFoundPost"

LAG_HEADER = "Atproto-Upstream-Lag"

# (did, nsid, params) → the AppView's JSON answer; raises UpstreamError for an error answer.
AppviewQuery = Callable[[str, str, Mapping[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class LocalRecord:
    uri: str
    cid: str
    rkey: str
    indexed_at: str
    value: dict[str, Any]


@dataclass
class LocalRecords:
    posts: list[LocalRecord] = field(default_factory=list)  # oldest first
    profile: LocalRecord | None = None

    def lag_ms(self, now: float | None = None) -> int | None:
        times = [p.indexed_at for p in self.posts] + ([self.profile.indexed_at] if self.profile else [])
        oldest = min((_parse_time(t) for t in times), default=None)
        if oldest is None:
            return None
        return max(0, int(((time.time() if now is None else now) - oldest) * 1000))


def _parse_time(value: Any) -> float:
    if not isinstance(value, str):
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _uri_did(uri: Any) -> str | None:
    if not isinstance(uri, str) or not uri.startswith("at://"):
        return None
    return uri[len("at://"):].split("/", 1)[0]


def _blob_cid(blob: Any) -> str | None:
    if not isinstance(blob, dict):
        return None
    ref = blob.get("ref")
    if isinstance(ref, dict) and isinstance(ref.get("$link"), str):
        return ref["$link"]
    if isinstance(blob.get("cid"), str):  # legacy blob
        return blob["cid"]
    return None


def _reply_ref(record: dict[str, Any]) -> tuple[str | None, str | None]:
    reply = record.get("reply")
    if not isinstance(reply, dict):
        return None, None
    parent, root = reply.get("parent"), reply.get("root")
    return (parent.get("uri") if isinstance(parent, dict) else None,
            root.get("uri") if isinstance(root, dict) else None)


class ReadAfterWrite:
    def __init__(self, settings: Any, db: Any, lexicons: Lexicons, appview_query: AppviewQuery, *,
                 log: logging.Logger | None = None):
        self.settings = settings
        self.db = db
        self.lexicons = lexicons
        self.appview_query = appview_query
        self.log = log or logging.getLogger("squall.proxy")

    # -- what the AppView has not seen ------------------------------------------------------------

    async def local_since(self, did: str, rev: str) -> LocalRecords | None:
        if not is_valid_tid(rev):
            return None
        rows = await repos_store.records_since_rev(self.db, did, (POST, PROFILE), rev, limit=MAX_LOCAL_RECORDS)
        if not rows:
            return None
        account = await get_by_did(self.db, did)
        # A rev from before the account lived here (the AppView saw it on its previous PDS) says
        # nothing about what of this repo it has indexed.
        if account is None or tid_timestamp(rev) / 1e6 < _parse_time(account.created_at) - CLOCK_SLACK:
            return None
        local = LocalRecords()
        for row in reversed(rows):  # oldest first: a reply to a newer reply finds its parent inserted
            stored = await reader.get_active_record(self.db, did, row["collection"], row["rkey"], row["cid"])
            if stored is None or not isinstance(stored.value, dict):
                continue
            record = LocalRecord(stored.uri, stored.cid, row["rkey"], row["indexed_at"], stored.value)
            if row["collection"] == POST:
                local.posts.append(record)
            elif row["rkey"] == "self":
                local.profile = record
        return local if local.posts or local.profile else None

    # -- the hook the forwarder calls ---------------------------------------------------------------

    async def rewrite_for(self, did: str, nsid: str, params: Mapping[str, str]):
        """The forwarder's ``rewrite`` hook for this call, or None when the method is not munged or
        the request is not about the caller (someone else's feed or profile)."""
        if nsid not in MUNGED:
            return None
        if nsid in (AUTHOR_FEED, GET_PROFILE) and not await self._is_self(did, params.get("actor")):
            return None
        if nsid == AUTHOR_FEED and params.get("cursor"):
            return None  # newer posts belong on the first page only
        if nsid == TIMELINE and params.get("cursor"):
            return None

        async def hook(headers: httpx.Headers):
            rev = headers.get("atproto-repo-rev")
            if not rev:
                return None
            local = await self.local_since(did, rev)
            if local is None:
                return None
            if nsid in (GET_PROFILE, GET_PROFILES, ACTOR_LIKES) and local.profile is None:
                return None

            async def munge(body: Any):
                try:
                    out = await self._munge(nsid, did, params, body, local)
                except (KeyError, TypeError, AttributeError, ValueError) as exc:
                    self.log.warning("read-after-write left an answer alone: %s", exc, extra={"nsid": nsid})
                    return None
                if out is None:
                    return None
                lag = local.lag_ms()
                return out, ({LAG_HEADER: str(lag)} if lag is not None else {})

            return munge

        return hook

    async def _is_self(self, did: str, actor: Any) -> bool:
        if not isinstance(actor, str) or not actor:
            return False
        if actor.startswith("did:"):
            return actor == did
        account = await get_by_did(self.db, did)
        return account is not None and account.handle is not None and account.handle == actor.lower()

    async def _munge(self, nsid: str, did: str, params: Mapping[str, str], body: Any,
                     local: LocalRecords) -> Any | None:
        if not isinstance(body, dict):
            return None
        views = _Views(self, did, local)
        if nsid == GET_PROFILE:
            if body.get("did") != did or not isinstance(body.get("handle"), str):
                return None
            return views.profile_detailed(body)
        if nsid == GET_PROFILES:
            profiles = body.get("profiles")
            if not isinstance(profiles, list):
                return None
            return {**body, "profiles": [views.profile_detailed(p) if isinstance(p, dict) and p.get("did") == did
                                         else p for p in profiles]}
        if nsid == POST_THREAD:
            thread = body.get("thread")
            if not isinstance(thread, dict) or thread.get("$type") != THREAD_VIEW:
                return None
            new = await views.add_posts_to_thread(thread, local.posts)
            new = views.refresh_thread_authors(new)
            return {**body, "thread": new}
        feed = body.get("feed")
        if not isinstance(feed, list) or not all(isinstance(i, dict) and isinstance(i.get("post"), dict)
                                                 for i in feed):
            return None
        feed = views.refresh_feed_authors(feed)
        if nsid in (TIMELINE, AUTHOR_FEED):
            posts = local.posts
            if nsid == AUTHOR_FEED:
                posts = [p for p in posts if _author_filter(params.get("filter"), did, p.value)]
            feed = await views.insert_posts(feed, posts)
        return {**body, "feed": feed}

    # -- a thread the AppView has not seen ----------------------------------------------------------

    async def thread_not_found(self, did: str, params: Mapping[str, str], error: UpstreamError) -> Any | None:
        """For getPostThread answered NotFound: (body, headers) of a thread built from the caller's
        newer posts, or None to let the error stand."""
        rev = error.headers.get("atproto-repo-rev") if error.headers else None
        uri = params.get("uri")
        if not rev or _uri_did(uri) != did:
            return None
        local = await self.local_since(did, rev)
        if local is None:
            return None
        by_uri = {p.uri: p for p in local.posts}
        found = by_uri.get(uri)  # type: ignore[arg-type]
        if found is None:
            return None
        views = _Views(self, did, local)
        thread = await views.thread_post(found)
        if thread is None:
            return None
        thread = await views.add_posts_to_thread(thread, [p for p in local.posts if p.uri != uri])
        # Parents: the caller's own newer ones from here, the rest from the AppView.
        node = thread
        seen = {uri}
        while True:
            parent_uri, _ = _reply_ref(node["post"]["record"])
            if parent_uri is None:
                break
            parent = by_uri.get(parent_uri)
            if parent is not None and parent_uri not in seen:
                seen.add(parent_uri)
                built = await views.thread_post(parent)
                if built is None:
                    break
                node["parent"] = built
                node = built
                continue
            query: dict[str, Any] = {"uri": parent_uri, "depth": "0"}
            if params.get("parentHeight"):
                query["parentHeight"] = params["parentHeight"]
            try:
                answer = await self.appview_query(did, POST_THREAD, query)
                upstream = answer.get("thread") if isinstance(answer, dict) else None
                if isinstance(upstream, dict):
                    node["parent"] = upstream
            except UpstreamError as exc:
                if exc.name != "NotFound":
                    raise
                node["parent"] = {"$type": NOT_FOUND_POST, "uri": parent_uri, "notFound": True}
            break
        lag = local.lag_ms()
        return {"thread": thread}, ({LAG_HEADER: str(lag)} if lag is not None else {})

    # -- URLs ---------------------------------------------------------------------------------------

    def image_url(self, kind: str, did: str, cid: str) -> str:
        pattern = self.settings.bsky_app_view_cdn_url_pattern
        if pattern:
            return pattern.replace("%s", kind, 1).replace("%s", did, 1).replace("%s", cid, 1)
        return (f"{self.settings.public_url}/xrpc/com.atproto.sync.getBlob?did={quote(did, safe='')}"
                f"&cid={quote(cid, safe='')}")

    def valid(self, ref: str, value: Any) -> bool:
        try:
            self.lexicons.validate_object(ref, value)
            return True
        except (LexiconValidationError, LexiconNotFoundError, LexiconSchemaError) as exc:
            self.log.warning("read-after-write view left out: %s", exc, extra={"ref": ref})
            return False


def _author_filter(name: Any, did: str, record: dict[str, Any]) -> bool:
    parent, _ = _reply_ref(record)
    embed = record.get("embed") if isinstance(record.get("embed"), dict) else {}
    kind = embed.get("$type")
    if kind == "app.bsky.embed.recordWithMedia" and isinstance(embed.get("media"), dict):
        kind = embed["media"].get("$type")
    if name == "posts_no_replies":
        return parent is None
    if name == "posts_with_media":
        return kind == "app.bsky.embed.images"
    if name == "posts_with_video":
        return kind == "app.bsky.embed.video"
    if name == "posts_and_author_threads":
        return parent is None or _uri_did(parent) == did
    return True


class _Views:
    """The views of one munge: the caller's basic profile, post views, and what the AppView is
    asked for (posts quoted or replied to), each fetched once."""

    def __init__(self, raw: ReadAfterWrite, did: str, local: LocalRecords):
        self.raw = raw
        self.did = did
        self.local = local
        self._basic: dict[str, Any] | None = None
        self._posts: dict[str, dict[str, Any]] = {}

    # profiles

    async def profile_basic(self) -> dict[str, Any] | None:
        if self._basic is not None:
            return self._basic
        account = await get_by_did(self.raw.db, self.did)
        if account is None:
            return None
        view: dict[str, Any] = {"did": self.did, "handle": account.handle or "handle.invalid"}
        profile = self.local.profile
        value = profile.value if profile is not None else None
        if value is None:
            stored = await reader.get_active_record(self.raw.db, self.did, PROFILE, "self")
            value = stored.value if stored is not None and isinstance(stored.value, dict) else None
        if value is not None:
            view = self._with_profile(view, value, detailed=False)
        self._basic = view
        return view

    def _with_profile(self, view: dict[str, Any], record: dict[str, Any], *, detailed: bool,
                      description: bool = False) -> dict[str, Any]:
        out = dict(view)
        fields: list[tuple[str, str | None]] = [("displayName", None), ("avatar", "avatar")]
        if detailed or description:
            fields.append(("description", None))
        if detailed:
            fields.append(("banner", "banner"))
        for name, kind in fields:
            out.pop(name, None)
            value = record.get(name)
            if kind is None:
                if isinstance(value, str):
                    out[name] = value
            else:
                cid = _blob_cid(value)
                if cid is not None:
                    out[name] = self.raw.image_url(kind, self.did, cid)
        return out

    def profile_detailed(self, view: dict[str, Any]) -> dict[str, Any]:
        profile = self.local.profile
        if profile is None:
            return view
        new = self._with_profile(view, profile.value, detailed=True)
        return new if self.raw.valid("app.bsky.actor.defs#profileViewDetailed", new) else view

    def _refresh_author(self, post: dict[str, Any]) -> dict[str, Any]:
        author = post.get("author")
        profile = self.local.profile
        if profile is None or not isinstance(author, dict) or author.get("did") != self.did:
            return post
        new_author = self._with_profile(author, profile.value, detailed=False)
        if not self.raw.valid("app.bsky.actor.defs#profileViewBasic", new_author):
            return post
        return {**post, "author": new_author}

    def refresh_feed_authors(self, feed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.local.profile is None:
            return feed
        out = []
        for item in feed:
            item = {**item, "post": self._refresh_author(item["post"])}
            reply = item.get("reply")
            if isinstance(reply, dict):
                item["reply"] = {k: (self._refresh_author(v) if isinstance(v, dict) and v.get("$type") == POST_VIEW
                                     else v) for k, v in reply.items()}
            out.append(item)
        return out

    def refresh_thread_authors(self, thread: dict[str, Any]) -> dict[str, Any]:
        if self.local.profile is None or not isinstance(thread, dict) or thread.get("$type") != THREAD_VIEW:
            return thread
        out = {**thread, "post": self._refresh_author(thread["post"])}
        if isinstance(thread.get("parent"), dict):
            out["parent"] = self.refresh_thread_authors(thread["parent"])
        if isinstance(thread.get("replies"), list):
            out["replies"] = [self.refresh_thread_authors(r) for r in thread["replies"]]
        return out

    # posts from the AppView (quoted posts, reply parents)

    async def appview_posts(self, uris: list[str]) -> dict[str, dict[str, Any]]:
        wanted = [u for u in dict.fromkeys(uris) if u not in self._posts][:MAX_GET_POSTS]
        if wanted:
            try:
                answer = await self.raw.appview_query(self.did, GET_POSTS, {"uris": wanted})
            except UpstreamError as exc:
                self.raw.log.info("read-after-write: getPosts failed: %s", exc)
                answer = None
            posts = answer.get("posts") if isinstance(answer, dict) else None
            for post in posts if isinstance(posts, list) else []:
                if isinstance(post, dict) and isinstance(post.get("uri"), str):
                    self._posts[post["uri"]] = post
        return {u: self._posts[u] for u in uris if u in self._posts}

    # building post views from local records

    async def post_view(self, record: LocalRecord) -> dict[str, Any] | None:
        author = await self.profile_basic()
        if author is None:
            return None
        view: dict[str, Any] = {
            "$type": POST_VIEW, "uri": record.uri, "cid": record.cid, "author": author, "record": record.value,
            "replyCount": 0, "repostCount": 0, "likeCount": 0, "quoteCount": 0,
            "indexedAt": record.indexed_at, "labels": [],
        }
        embed = await self._embed(record.value.get("embed"))
        if embed is not None:
            view["embed"] = embed
        return view if self.raw.valid(POST_VIEW, view) else None

    async def _embed(self, embed: Any) -> dict[str, Any] | None:
        if not isinstance(embed, dict):
            return None
        kind = embed.get("$type")
        if kind == "app.bsky.embed.images":
            return self._images(embed)
        if kind == "app.bsky.embed.external":
            return self._external(embed)
        if kind == "app.bsky.embed.record":
            record = await self._record(embed.get("record"))
            return {"$type": "app.bsky.embed.record#view", "record": record} if record is not None else None
        if kind == "app.bsky.embed.recordWithMedia":
            record_embed = embed.get("record") if isinstance(embed.get("record"), dict) else {}
            record = await self._record(record_embed.get("record"))
            media = embed.get("media") if isinstance(embed.get("media"), dict) else {}
            media_view = (self._images(media) if media.get("$type") == "app.bsky.embed.images"
                          else self._external(media) if media.get("$type") == "app.bsky.embed.external" else None)
            if record is None or media_view is None:
                return None
            return {"$type": "app.bsky.embed.recordWithMedia#view",
                    "record": {"$type": "app.bsky.embed.record#view", "record": record}, "media": media_view}
        return None  # video and unknown embeds need the AppView's own processing

    def _images(self, embed: dict[str, Any]) -> dict[str, Any] | None:
        images = []
        for image in embed.get("images") or []:
            cid = _blob_cid(image.get("image")) if isinstance(image, dict) else None
            if cid is None:
                return None
            view: dict[str, Any] = {"thumb": self.raw.image_url("feed_thumbnail", self.did, cid),
                                    "fullsize": self.raw.image_url("feed_fullsize", self.did, cid),
                                    "alt": image.get("alt") if isinstance(image.get("alt"), str) else ""}
            if isinstance(image.get("aspectRatio"), dict):
                view["aspectRatio"] = image["aspectRatio"]
            images.append(view)
        return {"$type": "app.bsky.embed.images#view", "images": images}

    def _external(self, embed: dict[str, Any]) -> dict[str, Any] | None:
        external = embed.get("external")
        if not isinstance(external, dict):
            return None
        view = {k: external.get(k) for k in ("uri", "title", "description")}
        if not all(isinstance(v, str) for v in view.values()):
            return None
        cid = _blob_cid(external.get("thumb"))
        if cid is not None:
            view["thumb"] = self.raw.image_url("feed_thumbnail", self.did, cid)
        return {"$type": "app.bsky.embed.external#view", "external": view}

    async def _record(self, ref: Any) -> dict[str, Any] | None:
        """The view of a quoted post (other quoted records are left to the AppView)."""
        if not isinstance(ref, dict) or not isinstance(ref.get("uri"), str):
            return None
        uri = ref["uri"]
        if "/app.bsky.feed.post/" not in uri:
            return None
        post = (await self.appview_posts([uri])).get(uri)
        if post is None:
            return {"$type": "app.bsky.embed.record#viewNotFound", "uri": uri, "notFound": True}
        view: dict[str, Any] = {"$type": "app.bsky.embed.record#viewRecord", "uri": post["uri"], "cid": post.get("cid"),
                                "author": post.get("author"), "value": post.get("record"),
                                "labels": post.get("labels") or [], "indexedAt": post.get("indexedAt")}
        for count in ("replyCount", "repostCount", "likeCount", "quoteCount"):
            if isinstance(post.get(count), int):
                view[count] = post[count]
        if isinstance(post.get("embed"), dict):
            view["embeds"] = [post["embed"]]
        return view

    # feeds

    async def _feed_item(self, record: LocalRecord) -> dict[str, Any] | None:
        view = await self.post_view(record)
        if view is None:
            return None
        item: dict[str, Any] = {"post": view}
        parent_uri, root_uri = _reply_ref(record.value)
        if parent_uri is not None and root_uri is not None:
            found = await self.appview_posts([parent_uri, root_uri])
            local = {p.uri: p for p in self.local.posts}
            reply = {}
            for key, uri in (("root", root_uri), ("parent", parent_uri)):
                ref = found.get(uri)
                if ref is not None:
                    ref = {**ref, "$type": POST_VIEW}
                elif uri in local and uri != record.uri:
                    ref = await self.post_view(local[uri])
                if ref is None:
                    ref = {"$type": NOT_FOUND_POST, "uri": uri, "notFound": True}
                reply[key] = ref
            item["reply"] = reply
        return item if self.raw.valid(f"{FEED_DEFS}#feedViewPost", item) else None

    async def insert_posts(self, feed: list[dict[str, Any]], posts: list[LocalRecord]) -> list[dict[str, Any]]:
        if not posts:
            return feed
        out = list(feed)
        last = _parse_time(feed[-1]["post"].get("indexedAt")) if feed else 0.0
        present = {item["post"].get("uri") for item in feed}
        for record in posts:
            when = _parse_time(record.indexed_at)
            if record.uri in present or when < last:
                continue
            item = await self._feed_item(record)
            if item is None:
                continue
            index = next((i for i, other in enumerate(out) if _parse_time(other["post"].get("indexedAt")) < when),
                         len(out))
            out.insert(index, item)
            present.add(record.uri)
        return out

    # threads

    async def thread_post(self, record: LocalRecord) -> dict[str, Any] | None:
        view = await self.post_view(record)
        if view is None:
            return None
        return {"$type": THREAD_VIEW, "post": view, "replies": []}

    async def add_posts_to_thread(self, thread: dict[str, Any], posts: list[LocalRecord]) -> dict[str, Any]:
        record = thread["post"].get("record") if isinstance(thread.get("post"), dict) else None
        if not isinstance(record, dict):
            return thread
        _, root = _reply_ref(record)
        root = root or thread["post"].get("uri")
        for post in posts:
            parent_uri, post_root = _reply_ref(post.value)
            if parent_uri is None or post_root != root:
                continue
            thread = await self._insert_reply(thread, parent_uri, post)
        return thread

    async def _insert_reply(self, node: dict[str, Any], parent_uri: str, post: LocalRecord) -> dict[str, Any]:
        if node.get("$type") != THREAD_VIEW or not isinstance(node.get("post"), dict):
            return node
        replies = node.get("replies") if isinstance(node.get("replies"), list) else []
        if node["post"].get("uri") == parent_uri:
            if any(isinstance(r, dict) and isinstance(r.get("post"), dict) and r["post"].get("uri") == post.uri
                   for r in replies):
                return node
            built = await self.thread_post(post)
            if built is None or not self.raw.valid(THREAD_VIEW, built):
                return node
            return {**node, "replies": [built, *replies]}
        if not replies:
            return node
        return {**node, "replies": [await self._insert_reply(r, parent_uri, post) if isinstance(r, dict) else r
                                    for r in replies]}
