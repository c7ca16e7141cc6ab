// How long the CUDA driver takes to link PTX given as pieces (hostcall_image::split), measured for docs/architecture.md.
// Build: cc -O2 -o splitjit splitjit.c -ldl -lpthread (no CUDA headers: the driver is opened with dlopen).
// splitjit MODE OPT FILE...   MODE: serial (PTX pieces, one link) | cubin (ptxas -c objects, one link) | threads (one link state per piece: compile only)
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
typedef int CUresult; typedef void* CUlinkState; typedef void* CUmodule; typedef void* CUfunction; typedef void* CUcontext; typedef int CUdevice;
static CUresult (*cuInit)(unsigned); static CUresult (*cuDeviceGet)(CUdevice*,int); static CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*,CUdevice); static CUresult (*cuCtxSetCurrent)(CUcontext);
static CUresult (*cuLinkCreate)(unsigned,int*,void**,CUlinkState*); static CUresult (*cuLinkAddData)(CUlinkState,int,void*,size_t,const char*,unsigned,int*,void**);
static CUresult (*cuLinkComplete)(CUlinkState,void**,size_t*); static CUresult (*cuLinkDestroy)(CUlinkState); static CUresult (*cuModuleLoadData)(CUmodule*,const void*);
static CUresult (*cuModuleGetFunction)(CUfunction*,CUmodule,const char*); static CUresult (*cuFuncGetAttribute)(int*,int,CUfunction);
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static char* slurp(const char*p,size_t*n){FILE*f=fopen(p,"rb");if(!f){perror(p);exit(1);}fseek(f,0,SEEK_END);*n=ftell(f);rewind(f);char*b=malloc(*n+1);if(fread(b,1,*n,f)!=*n)exit(1);b[*n]=0;fclose(f);return b;}
static int opt; static char log_[1<<16]; static CUcontext ctx;
static CUlinkState mk(char*log,size_t ln){CUlinkState ls;int o[5]={5,6,0,7,34};void*v[5]={log,(void*)ln,(void*)(size_t)64,(void*)(size_t)opt,(void*)0};
  CUresult r=cuLinkCreate(opt>=0?5:3,o,v,&ls); if(r){printf("cuLinkCreate %d\n",r);exit(1);} return ls;}
struct job{char*p;size_t n;double t;int r;};
static void* run1(void*a){struct job*j=a;cuCtxSetCurrent(ctx);char lg[4096]={0};CUlinkState ls=mk(lg,sizeof lg);double t0=now();j->r=cuLinkAddData(ls,1,j->p,j->n+1,"p",0,0,0);j->t=now()-t0;if(j->r)printf("add %d %s\n",j->r,lg);cuLinkDestroy(ls);return 0;}
#define L(n) n=dlsym(h,#n); if(!n){char b[64];snprintf(b,64,"%s_v2",#n);n=dlsym(h,b);} if(!n){printf("no %s\n",#n);return 1;}
int main(int argc,char**argv){
  void*h=dlopen("libcuda.so.1",RTLD_NOW); if(!h){printf("no libcuda\n");return 1;}
  L(cuInit);L(cuDeviceGet);L(cuDevicePrimaryCtxRetain);L(cuCtxSetCurrent);L(cuModuleLoadData);L(cuModuleGetFunction);L(cuFuncGetAttribute);
  cuLinkCreate=dlsym(h,"cuLinkCreate_v2");cuLinkAddData=dlsym(h,"cuLinkAddData_v2");cuLinkComplete=dlsym(h,"cuLinkComplete");cuLinkDestroy=dlsym(h,"cuLinkDestroy");
  CUdevice d;CUcontext c; cuInit(0);cuDeviceGet(&d,0);cuDevicePrimaryCtxRetain(&c,d);cuCtxSetCurrent(c);ctx=c;
  const char*mode=argv[1]; opt=atoi(argv[2]); int k=argc-3; double t0=now();
  if(!strcmp(mode,"threads")){pthread_t th[256];struct job j[256];for(int i=0;i<k;i++){j[i].p=slurp(argv[3+i],&j[i].n);pthread_create(&th[i],0,run1,&j[i]);}
    double mx=0,sum=0;for(int i=0;i<k;i++){pthread_join(th[i],0);sum+=j[i].t;if(j[i].t>mx)mx=j[i].t;}
    printf("threads k=%d opt=%d wall %.2f s  sum %.2f s  max piece %.2f s\n",k,opt,now()-t0,sum,mx);return 0;}
  CUlinkState ls=mk(log_,sizeof log_); double mx=0;
  for(int i=0;i<k;i++){size_t n;char*p=slurp(argv[3+i],&n);int cub=!strcmp(mode,"cubin");double t1=now();
    CUresult r=cuLinkAddData(ls,cub?0:1,p,cub?n:n+1,argv[3+i],0,0,0); double dt=now()-t1; if(dt>mx)mx=dt;
    if(r){printf("FAIL add %s: %d %s\n",argv[3+i],r,log_);return 1;}}
  double ta=now(); void*cub;size_t cn;CUresult r=cuLinkComplete(ls,&cub,&cn); if(r){printf("FAIL complete %d %s\n",r,log_);return 1;}
  double tc=now(); CUmodule m; r=cuModuleLoadData(&m,cub); if(r){printf("FAIL load %d\n",r);return 1;}
  CUfunction f; int regs=-1; if(cuModuleGetFunction(&f,m,"regex_main")==0)cuFuncGetAttribute(&regs,4,f);
  printf("%s k=%d opt=%d: total %.2f s (add %.2f, max piece %.2f, complete %.2f, load %.3f) regs(regex_main)=%d cubin %zu B\n",mode,k,opt,now()-t0,ta-t0,mx,tc-ta,now()-tc,regs,cn);
  return 0;}
