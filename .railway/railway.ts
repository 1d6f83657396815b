// Squall on Railway, as infrastructure as code (`railway config plan`, then `railway config apply`).
//
// One service built from images/pds/Dockerfile. On Railway the image runs in its all-in-one mode:
// supervisord runs the PDS (`squall serve`, on Railway's PORT) and the backup sidecar
// (`squall-backup run`) in one container, and the container exits non-zero if either dies for
// good, so the ON_FAILURE policy restarts it. Railway's edge terminates TLS. All state is on the
// volume at /data; one replica only (one SQLite writer).
//
// The same settings are in ../railway.json (Config as Code, which Railway still reads for services
// created before it stopped doing so); tests/test_railway_config.py keeps the two in step. A
// service is managed by one of them, never both: `railway config plan` refuses a service that
// railway.json manages.
//
// Variables: the hostname comes from the environment of the apply
// (`PDS_HOSTNAME=pds.example.com railway config apply`), or is kept as already set on Railway.
// Secrets (BACKUP_S3_SECRET_ACCESS_KEY, …) are never written here: set them with
// `railway variable set`. Every variable is described in config/pds.env.example.
import { defineRailway, preserve, project, service, volume } from "railway/iac";

export default defineRailway(() => {
  const data = volume("squall-data");

  const pds = service("squall", {
    build: { builder: "DOCKERFILE", dockerfilePath: "images/pds/Dockerfile" },
    healthcheck: "/xrpc/_health",
    healthcheckTimeout: 120,
    replicas: 1,
    deploy: { restartPolicyType: "ON_FAILURE", restartPolicyMaxRetries: 10 },
    volumeMounts: { "/data": data },
    env: {
      PDS_HOSTNAME: process.env.PDS_HOSTNAME ?? preserve(),
      PDS_DATA_DIRECTORY: "/data",
      SQUALL_MODE: "all-in-one",
      PDS_TRUST_PROXY_HEADERS: "true",
    },
  });

  return project("squall", {
    resources: [pds, data],
  });
});
